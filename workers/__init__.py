"""The Celery side: thin tasks, the job runner, and the Claude client."""
