"""Two-tower retrieval, faiss indexes and candidate generators (paper 3.6.1, 4.5.1)."""
