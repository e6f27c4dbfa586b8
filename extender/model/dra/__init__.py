"""Dynamic Resource Allocation, modelled: the devices a DRA driver publishes, the claims pods make, and the
choice kube-scheduler's structured allocator makes between them. Pure: records in, answers out."""
