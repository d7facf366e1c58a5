"""iPhone and iPad backups (Finder, iTunes, idevicebackup2) as a source of messages and names.

`extracted_backup` takes `sms.db` and `AddressBook.sqlitedb` out of a backup, plain or
encrypted, into a private folder; `read_ios_contacts` reads the iOS Contacts schema;
`find_backups` lists the backups in the usual places. The backup is never written.
"""

from .addressbook import read_ios_contacts
from .extract import ExtractedBackup, Password, PasswordProvider, extracted_backup, watched_files
from .folder import BackupInfo, default_backup_roots, find_backups, is_backup, read_backup_info
from .password import PASSWORD_ENV, password_provider

__all__ = [
    "PASSWORD_ENV",
    "BackupInfo",
    "ExtractedBackup",
    "Password",
    "PasswordProvider",
    "default_backup_roots",
    "extracted_backup",
    "find_backups",
    "is_backup",
    "password_provider",
    "read_backup_info",
    "read_ios_contacts",
    "watched_files",
]
