"""What runs produce: the result record and its schema, leaderboards, comparisons,
model-index export, thumbnails and the static report page."""
