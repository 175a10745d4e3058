"""The security scan: turns each org's new audit events and member states into findings.

`scan.scan_all` runs on a schedule and on demand; `scan.scan_org` scans one org and returns
what it found; `rules` holds the detection rules as pure functions of the events; `findings`
lists the stored findings for org admins.
"""
