"""Reading what users have, read-only: a Messages database (`chatdb/`) and Contacts databases."""
