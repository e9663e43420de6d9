"""Apps the tests run in server subprocesses, as a user does: ``trio-push pubsub_app:app``
with this folder as the working directory (``tests.helpers.procs.APPS``)."""
