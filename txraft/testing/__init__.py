"""
Test support that ships with txraft, as C{twisted.internet.testing} ships
with Twisted: run a cluster of real node processes on this machine
(L{txraft.testing.localcluster}), hurt it with faults while clients record
what they see (L{txraft.testing.chaos}), check that record for
linearizability (L{txraft.testing.linearizability}), and drive timed load
through one connection (L{txraft.testing.load}).

It is for blocking callers (tests, benchmarks, scripts) and needs only an
installed txraft: the nodes it starts run the installed package and its
twistd plugin, not a source checkout.
"""
