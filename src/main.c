/* cutover: one binary. `serve` is the daemon (serve/), `demo` the demonstration (demo/), and
 * every other subcommand a client of the daemon's admin API (cli/). */
#include <string.h>

#include "cli/cli.h"
#include "demo/backend.h"
#include "demo/demo.h"
#include "serve/serve.h"

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "serve") == 0)
        return serve_main(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "demo") == 0)
        return demo_main(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "sample-backend") == 0)
        return demo_backend_main(argc - 1, argv + 1);
    return cli_main(argc, argv);
}
