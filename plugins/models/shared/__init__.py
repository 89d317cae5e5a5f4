"""Parts more than one built-in model plugin uses (not a plugin): option fields, recurrent encoders, the
recurrent models' base, the seq2seq base and its decoding, and tagging helpers; each module says which."""
