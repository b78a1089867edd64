"""Scheduling: submit, the dispatch pipeline (policy -> routing -> publish), results and the DLQ."""
