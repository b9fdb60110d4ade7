"""gcp-storage-emulator, with object downloads that carry `x-goog-generation` as GCS's do.

tensorstore (under Orbax) reads an object's generation from that header to update
`manifest.ocdbt` conditionally; without it every save of more than a few arrays fails with
"Malformed StorageGeneration". Run as `python tests/gcs_emulator.py start --port ...`, the
same arguments as `python -m gcp_storage_emulator`.

An outage on demand: while the file named by $GCS_EMULATOR_OUTAGE exists, every request's
connection is closed unanswered, as a client sees a network that went away mid-run.
"""

import os
import sys

from gcp_storage_emulator.handlers import objects

_download = objects.download


def _download_with_generation(request, response, storage, *args, **kwargs):
  _download(request, response, storage, *args, **kwargs)
  try:
    obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
  except Exception:  # not found: the handler has answered 404
    return
  response["x-goog-generation"] = str(obj["generation"])
  response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))


# Before the server module is imported: its routing table binds the handler functions.
objects.download = _download_with_generation

from gcp_storage_emulator import server  # noqa: E402

_handle = server.Router.handle


def _handle_unless_out(router, method):
  outage = os.environ.get("GCS_EMULATOR_OUTAGE")
  if outage and os.path.exists(outage):
    router._request_handler.close_connection = True  # no answer: the client's read fails
    return
  _handle(router, method)


server.Router.handle = _handle_unless_out

from gcp_storage_emulator.__main__ import main  # noqa: E402

if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
