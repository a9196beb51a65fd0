"""Minimal kube-controller-manager loops the sandbox needs: Jobs and Deployments."""
