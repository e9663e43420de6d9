"""Tests of trio_push with real clients on 127.0.0.1, a module each: ``test_<name>.py``
checks what ``trio_push/_<name>.py`` does."""
