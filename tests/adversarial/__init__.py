"""Hostile and broken peers and apps, by subject: each gets its answer (a status, a close
code, a bounded cost) while a bystander keeps being served."""
