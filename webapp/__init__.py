"""The Django project. Importing the Celery app here makes `.delay()` use our broker."""

from celery_app import app as celery_app

__all__ = ("celery_app",)
