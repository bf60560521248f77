"""Identity resolution: a reversible, explainable identity graph.

Identities are nodes, IdentityLinks are edges with provenance; a profile is a connected
component of active edges. Modules:

- `blocklist`  values that never identify anyone (defaults + staff-edited), matching
- `extract`    identifiers and edges of one message (normalised, blocked values dropped, hashed)
- `traits`     identify traits -> profile columns / traits, and the precedence rule
- `locks`      the graph lock (shared by resolvers, exclusive for a rebuild) and profile locks
- `resolve`    set-based batch resolution of unresolved events (the Celery task's service)
- `merge`      set-based merging of profiles (re-pointing events, transactions, identities)
- `split`      un-merge: deactivate an edge, recompute the component, move things back
- `rebuild`    full recomputation of components with SciPy (COPY out, CSR, COPY in)
- `paths`      "why are these one person?": the path of edges joining two identifiers
- `flags`      cases the guard rails refused, and what staff decide about them
- `selectors`  reads for the profile explorer
- `store`, `locks`, `unionfind`, `devices`  shared plumbing: temporary tables + COPY, profile
  states, the graph and profile locks, the batch union-find, device classification
"""
