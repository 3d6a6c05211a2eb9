"""Helpers shared by more than one test directory (plain functions, no fixtures)."""
