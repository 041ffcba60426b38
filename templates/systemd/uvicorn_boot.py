# uvicorn with the HTTP protocol of opskit (opskit_uvicorn.DrainingH11Protocol, given
# above as SOURCE). uvicorn --workers starts each worker with the spawn method of
# multiprocessing, which imports the protocol again in the new process from sys.path:
# so the module is written as a file, in the RuntimeDirectory of the service (else a
# private temporary directory), and that directory put on sys.path, which spawn hands
# on to every worker.
import os
import sys
from pathlib import Path

runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
if runtime:
    home = Path(runtime, "opskit-python")
    home.mkdir(mode=0o700, exist_ok=True)
else:
    import atexit
    import shutil
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="opskit-uvicorn-"))
    atexit.register(shutil.rmtree, home, True)
module = home / "opskit_uvicorn.py"
if not module.is_file() or module.read_text() != SOURCE:
    module.with_suffix(".tmp").write_text(SOURCE)
    module.with_suffix(".tmp").replace(module)
sys.path.insert(0, str(home))
sys.argv[0] = "uvicorn"
from uvicorn.main import main

main()
