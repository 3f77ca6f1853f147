"""Retrieval for grounded answers: chunking, BM25 and dense indexes, hybrid fusion. Plain Python:
no Dagster import (assets wrap it)."""
