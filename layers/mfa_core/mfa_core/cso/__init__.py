"""The security scan: turns each org's new audit events and member states into findings.

`scan.scan_all` runs on a schedule and on demand, and `scan.scan_org` scans one org and returns
what it found. `rules` contains the detection rules that are pure functions of the events, and
`findings` lists the stored findings for org admins.
"""
