"""The model: Meshery's records in memory, their views, paging, topics, cursors and quotas."""
