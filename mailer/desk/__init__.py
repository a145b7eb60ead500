"""The columnist's desk: what the CLI and the web desk do to the archive.

``threads`` reads (the inbox, a thread, search) and files, ``replies``
answers a reader, ``export`` hands out the original bytes, ``drafts`` turns a
letter into an anonymised topic draft, ``forget`` erases a correspondent and
``passwords`` and ``sessions`` guard the web desk, ``corrections`` keeps the columnist's
urgent / not-urgent judgements. The names the faces use are offered here.
"""

from mailer.desk.corrections import LABELS, label_thread, labelled_letters  # noqa: F401
from mailer.desk.drafts import anonymize, archive_subject, topic_draft  # noqa: F401
from mailer.desk.errors import DeskError, EmptyReply, NothingToAnswer, ThreadNotFound  # noqa: F401
from mailer.desk.export import eml_name, export_eml, export_mbox, message_bytes  # noqa: F401
from mailer.desk.forget import (  # noqa: F401
    ErasureIncomplete,
    flush_write_ahead_log,
    ForgetReport,
    forget,
    mentions,
    register_address_columns,
    register_eraser,
)
from mailer.desk.passwords import (  # noqa: F401
    SCRYPT_N,
    SCRYPT_P,
    SCRYPT_R,
    PasswordHashError,
    hash_password,
    parse_password_hash,
    verify_password,
)
from mailer.desk.sessions import (  # noqa: F401
    SessionRegister,
    new_session_id,
    open_session,
    revoke_all_sessions,
    revoke_session,
)
from mailer.store.arrivals import arriving  # noqa: F401  (letters received, not filed yet)
from mailer.desk.replies import (  # noqa: F401
    Replied,
    ReplyDraft,
    compose_reply,
    greeting,
    mark,
    reply,
)
from mailer.desk.threads import (  # noqa: F401
    INBOX_VIEWS,
    SearchResult,
    highlight_parts,
    inbox,
    linked_topics,
    list_threads,
    reflow,
    reply_address,
    search,
    thread_detail,
    view_counts,
)
