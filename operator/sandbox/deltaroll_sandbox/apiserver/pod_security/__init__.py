"""Pod Security admission, as kube-apiserver's built-in PodSecurity plugin enforces it.

- :mod:`.standards`   the levels, versions and the registry of checks: ``evaluate`` a pod
- :mod:`.baseline`, :mod:`.restricted`   the checks themselves; :mod:`.fields` reads pods for them
- :mod:`.admission`   namespace labels to a policy; pods that break it are refused (403)
"""
