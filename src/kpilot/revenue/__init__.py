"""Revenue and acquisition: billing and spend data, MRR and its movements, SaaS metrics and customer value."""
