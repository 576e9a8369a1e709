"""Developer tools: the Claude simulator and other helpers never imported by production code."""
