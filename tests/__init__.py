"""The test suite (docs/testing.md): a package, so that test modules of the same
name in different folders do not collide and ``tests.helpers`` imports from any of them."""
