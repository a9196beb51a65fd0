"""The sandbox's Kubernetes API server.

- :mod:`.server`     the HTTP face (kmock's scaffold): routing, bodies, lists, logs, TLS serving
- :mod:`.store`      objects, resourceVersions, history, deletion and garbage collection
- :mod:`.watches`    watch streams; :mod:`.selectors` label/field selectors
- :mod:`.patches`    merge, JSON and strategic merge patches
- :mod:`.crds`, :mod:`.schemas`, :mod:`.cel`   CRDs: registration, schemas, CEL rules
- :mod:`.builtins`, :mod:`.metadata`   defaults and checks of builtin kinds and of labels
- :mod:`.pod_security`   Pod Security admission (the baseline and restricted standards)
- :mod:`.resources`, :mod:`.discovery`, :mod:`.openapi`, :mod:`.tables`   what clients discover
- :mod:`.scale`, :mod:`.protobuf`, :mod:`.statuses`   the scale subresource, protobuf bodies, errors
"""
