"""The notebooks' exercises answered: for each exercise (notebook number and letter) the right answer and a wrong
one, as a learner would type them. Kept out of the notebooks, so that the learner does not see them; read by
tests/test_exercises.py, which runs each notebook with both answers and expects "Correct!" and the hint."""

SOLUTIONS = {
    "00a": ("The", "L"),
    "01a": (37, 7),
    "01b": ("stop", "length"),
    "02a": (1, 10),
    "02b": (" upon", " time"),
    "03a": (0.34, 0.5),
    "03b": (False, True),
    "03c": (0.01, 0.1),
    "04a": (10, 5),
    "04b": (0.95, 0.96),
    "04c": (0.35, 0.5),
    "05a": (0.7, 0.48),
    "05b": (42, 50),
    "06a": (1.1, 1.05),
    "06b": (0.8, 1.5),
    "07a": (1.6, 0.8),
    "07b": (0.8, 0.7),
    "08a": (True, False),
    "08b": (True, False),
    "08c": (198, 30),
    "09a": (14, 25),
    "09b": (1.3, 1.0),
    "10a": ("The", " is"),
    "10b": (False, True),
    "10c": (4, 5),
    "11a": (832, 64),
    "11b": (5, 4),
    "12a": ("extra_body", "repetition_penalty"),
    "12b": (50, 0),
    "12c": (4, 5),
    "13a": ("llama.cpp", "transformers"),
}
"""exercise -> (right answer, wrong answer). Values the notebooks' committed outputs show (or, for predictions,
what the kit computes): a change that moves one of them is a change the exercise's text must follow. For a goal
exercise (03c, 04c, 10c) the right answer is one of those that reach the goal (10c: 5 beams also find it, but 4 is the
smallest; computed with the kit on the CPU); 04b's wrong answer is the one on the
wrong side of the cut (0.96 keeps a second token)."""
