"""NER commands: vectors and corpus conversion (registered on the shared app)."""
