"""doit entry point: `doit sessions`, `doit list`, `doit clean`...

The configuration is `finetune.toml` beside this file, or the file named by
IMESSAGE_FINETUNE_CONFIG. The tasks themselves live in `imessage_finetune.pipeline.tasks`, shared
with the `imessage-finetune` command.
"""

import sys
from pathlib import Path

try:
    from imessage_finetune.errors import FinetuneError
    from imessage_finetune.pipeline.tasks import doit_namespace, load_project_config

    try:
        globals().update(doit_namespace(load_project_config(Path(__file__).resolve().parent)))
    except FinetuneError as error:  # a config mistake: one line that says what to fix
        sys.exit(f"Error: {error}")
except KeyboardInterrupt:  # Ctrl-C while the pipeline's modules load (seconds on a busy machine)
    sys.stderr.write("interrupted while starting; nothing was done\n")
    sys.exit(130)
