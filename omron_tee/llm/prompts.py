"""The validator's benchmark prompts: plain text for a base model to continue."""

BENCH_PROMPTS = (
    "The capital of France is",
    "Water boils at a temperature of",
    "The three primary colors are",
    "In computer science, a hash function is",
    "The largest planet in the solar system is",
    "Photosynthesis is the process by which",
    "A prime number is a number that",
    "The first person to walk on the moon was",
    "Bees are important to agriculture because",
    "The Pythagorean theorem states that",
    "An encryption key should be kept secret because",
    "The Great Wall of China was built to",
)
