"""Runs a command where io_uring is refused, as Docker's default seccomp profile refuses it:
io_uring_setup fails with EPERM. Usage: no_io_uring.py COMMAND [ARG...]"""
import errno
import os
import sys

import seccomp  # python3-seccomp (libseccomp)

f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
f.add_rule(seccomp.ERRNO(errno.EPERM), "io_uring_setup")
f.load()  # kept across exec
os.execvp(sys.argv[1], sys.argv[1:])
