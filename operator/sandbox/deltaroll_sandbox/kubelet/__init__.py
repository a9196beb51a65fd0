"""The sandbox's kubelet: runs pods' containers as local processes.

How a pod maps onto one machine (documented for everyone writing manifests for the sandbox):

- **Command.** The image is ignored; ``command`` + ``args`` run as a local process. A bare
  command (``python``, ``deltaroll``) is found on the pod's ``PATH``, which puts the sandbox's
  virtual environment's ``bin`` first. A container without ``command`` cannot start
  (``CreateContainerError``): the sandbox has no image entrypoints.
- **Files.** Each pod gets a folder ``<sandbox>/pods/<namespace>/<name>-<uid8>/``. Processes cannot
  mount, so each ``volumeMount.mountPath`` maps to a real folder (emptyDir, configMap, secret and
  downwardAPI volumes under the pod folder; hostPath a folder of the pod's node, see
  :mod:`.node`, the machine's own with one node; a persistentVolumeClaim to
  ``<sandbox>/pvcs/<namespace>/<claim>``, shared by all pods using the claim). The kubelet
  rewrites every occurrence of a mountPath (as a path prefix) in command, args, env values and
  workingDir to its folder, and also tells the process ``DELTAROLL_SANDBOX_MOUNTS`` (JSON
  ``{mountPath: folder}``) and ``DELTAROLL_SANDBOX_POD_DIR``. ``terminationMessagePath`` maps to
  a file in the pod folder the same way. DownwardAPI files are rewritten atomically when the
  pod's labels or annotations change, as the real kubelet does.
- **Ports.** Every ``containerPort`` gets a free loopback port. The process sees
  ``DELTAROLL_SANDBOX_PORT_<NAME>`` (port name upper-cased, ``-`` as ``_``) and
  ``DELTAROLL_SANDBOX_PORT_<containerPort>``. Containers of a pod share its ports, as in a pod:
  any argument or env value naming one of the pod's container ports (``8000``, ``--port=8000``,
  ``localhost:8000``, ``http://localhost:8000/v1``) is rewritten to the host port. The
  pod's ``status.podIP`` is ``127.0.0.1`` and the annotation ``sandbox.deltaroll.dev/ports`` maps
  each port name and number to its host port. A port with a ``hostPort`` keeps that number, on
  the node's address: its process binds ``status.hostIP`` (each node has its own, see
  :mod:`.node`), so one hostPort per node, as on a cluster. Probes' ports map the same way.
- **API access.** ``KUBERNETES_SERVICE_HOST``/``PORT`` name the API server; no container gets
  credentials by default (there is no ``/var/run/secrets`` to mount a default token at). A
  projected volume's ``serviceAccountToken`` source gets a token of the pod's ServiceAccount
  bound to the pod (RBAC and admission policies apply to it), a ``configMap``
  ``kube-root-ca.crt`` the API's CA (served by the kubelet, not stored as an object): point the
  client at that folder (the agent's
  ``--service-account-dir``). Tokens are rotated as the kubelet does: a new one replaces the file
  (atomically) once the old one is 80 % through its ``expirationSeconds`` or 24 h old; the old
  one stays valid until it expires, so a container must read its token file again.
- **Restarts.** ``restartPolicy`` is honoured with a back-off of 0.5 s doubling to 10 s (shorter
  than a cluster's 10 s to 5 min, so tests stay quick); waiting containers show
  ``CrashLoopBackOff``. Logs go to ``<pod folder>/logs/<container>/<restartCount>.log`` and are
  served by ``GET .../pods/<name>/log`` (``kubectl logs``, ``deltaroll sandbox logs``).
- **Deletion.** A deleted pod's processes get SIGTERM (their whole process group), then SIGKILL
  after ``terminationGracePeriodSeconds`` (at most 5 s here).
"""
