"""The column's published topics: the catalog, and which topics fit a letter.

``catalog`` reads and keeps the topics, ``matching`` ranks them against a
letter, and ``stemmer`` turns words into the terms the index holds. The
names most callers need are offered here.
"""

from mailer.topics.catalog import (  # noqa: F401
    Topic,
    TopicImportError,
    get_topic,
    import_topics,
    is_feed,
    list_topics,
    load_catalog,
    topics_published_since,
)
from mailer.topics.matching import (  # noqa: F401
    MIN_SCORE,
    TopicMatch,
    letter_terms,
    match_topics,
    topics_for_letter,
)
from mailer.topics.stemmer import STOP_WORDS  # noqa: F401
