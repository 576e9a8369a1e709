"""The HTML pages: each view parses the request, calls jobs.services or jobs.selectors, renders."""
