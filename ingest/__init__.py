"""Ingest: sources, filters, reading, chunking, embedding jobs, index building and update."""
