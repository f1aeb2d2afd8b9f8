"""Readers for real, user-supplied data: Webster-500 prompt files, LAION ground-truth image
folders, COCO captions. Nothing here downloads; every path comes from the user and every
file is read as data (JSON, CSV, images), never executed."""
