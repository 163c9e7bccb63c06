"""txraft: a Raft-replicated key-value store on Twisted."""
