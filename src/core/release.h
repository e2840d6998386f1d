/* cutover's release, one home for it: `cutover --version`, the API's version and the change
 * record an auditor reads all say this. */
#ifndef CUTOVER_CORE_RELEASE_H
#define CUTOVER_CORE_RELEASE_H

#define CUTOVER_RELEASE "0.1.0"

#endif
