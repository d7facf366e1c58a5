"""iPhone and iPad backups (Finder, iTunes, idevicebackup2) as a source of messages and names.

`extracted_backup` takes `sms.db` and `AddressBook.sqlitedb` out of a backup, plain or
encrypted, into a private folder; `backup_database` opens it as a Messages source with the
names of its handles; `read_ios_contacts` reads the iOS Contacts schema;
`find_backups` lists the backups in the usual places. The backup is never written.
"""

from imessage_finetune.sources.ios_backup.addressbook import read_ios_contacts
from imessage_finetune.sources.ios_backup.database import BackupDatabase, backup_database, ios_contact_book
from imessage_finetune.sources.ios_backup.extract import (
    ExtractedBackup,
    Password,
    PasswordProvider,
    extracted_backup,
    watched_files,
)
from imessage_finetune.sources.ios_backup.folder import (
    BackupInfo,
    default_backup_roots,
    find_backups,
    is_backup,
    read_backup_info,
)
from imessage_finetune.sources.ios_backup.password import PASSWORD_ENV, password_provider

__all__ = [
    "PASSWORD_ENV",
    "BackupDatabase",
    "BackupInfo",
    "ExtractedBackup",
    "Password",
    "PasswordProvider",
    "backup_database",
    "default_backup_roots",
    "extracted_backup",
    "find_backups",
    "ios_contact_book",
    "is_backup",
    "password_provider",
    "read_backup_info",
    "read_ios_contacts",
    "watched_files",
]
