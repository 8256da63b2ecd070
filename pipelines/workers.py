"""What a local Beam worker process of the pipeline sets up when it starts.

The pipeline names this module among its Beam plugins (`SetupOptions.beam_plugins`),
so every SDK worker process imports it at start-up, before any bundle:

- storage as the parent process configured it (importing `pipelines.contract.storage`
  does that in a worker: Beam's S3 filesystem fixed, Google credentials skipped
  where the parent found none);
- Ctrl-C left to the parent: a terminal sends SIGINT to the whole process group;
  the parent stops its workers itself (`preprocess.run`), and a worker that died
  of the signal first would only add its traceback to the parent's one line.
"""

import signal
import sys

from pipelines.contract import storage  # noqa: F401 (prepares Beam's filesystems in a worker, on import)

if "apache_beam.runners.worker.sdk_worker" in sys.modules:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
