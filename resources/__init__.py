"""Static assets of surgview (ontologies, prompt templates, styles): data files only."""
