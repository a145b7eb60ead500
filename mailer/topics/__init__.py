"""The column's published topics: the catalog, and which topics fit a letter.

``catalog`` reads and keeps the topics, ``matching`` ranks them against a
letter on words, ``themes`` and labelled ``examples``, and ``stemmer`` turns
words into the terms the index holds. The
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
from mailer.topics.examples import record_linked_topics  # noqa: F401
from mailer.topics.matching import (  # noqa: F401
    MIN_SCORE,
    RELATIVE_FIT,
    URGENT_THEMES,
    TopicMatch,
    letter_terms,
    match_topics,
    topic_themes,
    topics_for_letter,
)
from mailer.topics.themes import load_themes, theme_names  # noqa: F401
from mailer.topics.stemmer import STOP_WORDS  # noqa: F401
