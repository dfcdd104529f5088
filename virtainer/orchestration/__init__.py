"""virtainer's VMs as workloads of compose, Docker Swarm and Kubernetes: what the container needs
(needs), manifests rendered and checked (kustomize, kubernetes), the CLI commands (commands)."""
