/* The CLI's exit codes for what the daemon answered (see cli_internal.h): one home, for the
 * commands of cli.c and for watch.c alike. Pure. */
#include <string.h>

#include "cli/cli_internal.h"

int cli_exit_for_http(long status)
{
    if (status >= 200 && status < 300)
        return CLI_EXIT_OK;
    /* A conflict or a busy daemon is the operation failing, not the user typing it wrong. */
    if (status == 409 || status == 408 || status == 429)
        return CLI_EXIT_FAILED;
    if (status >= 400 && status < 500)
        return CLI_EXIT_USAGE;
    return CLI_EXIT_FAILED;
}

int cli_exit_for_state(const char *state)
{
    static const char *const bad[] = {"failed", "rolled_back", "aborted", "interrupted"};

    for (size_t i = 0; state != NULL && i < sizeof(bad) / sizeof(bad[0]); i++)
        if (strcmp(state, bad[i]) == 0)
            return CLI_EXIT_FAILED;
    return CLI_EXIT_OK;
}
