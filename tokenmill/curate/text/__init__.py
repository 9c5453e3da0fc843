"""Text utilities shared by filters: a spaCy-compatible word splitter and its punctuation tables."""
