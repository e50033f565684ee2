"""Helpers shared by the tests: test models, image folders, bad files, fault injection."""
