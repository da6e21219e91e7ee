"""The prompts the benchmarks share: eight short code and prose prompts, the rows of a
batch of up to 8 (``PROMPTS[:batch]``), so that every bench measures on the same text."""

PROMPTS = [
    'def print_prime(n):\n    """\n    Print all primes between 1 and n\n    """',
    "The capital of France is",
    "Write a short poem about the sea.",
    "import numpy as np\n\nx = np.arange(10)\n",
    "Once upon a time, in a small village near the mountains, there lived",
    "SELECT name FROM users WHERE",
    "The three laws of thermodynamics are",
    "Q: What is 2 + 2?\nA:",
]
