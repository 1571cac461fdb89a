"""Where events go: warnings, logging, a JSON-lines file, a callback, memory."""
