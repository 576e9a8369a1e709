"""The HTML pages: each view parses the request, calls a service or a selector, renders."""
