"""A DHCP client for the lab: asks for a lease as a device with a given MAC, prints what it got.

Run inside a device's namespace: DISCOVER, wait for the OFFER, REQUEST the
offered address, wait for the ACK. Prints {"offer": ip, "ack": ip, "server": ip}
as JSON (null where no answer came). The broadcast flag is set, so the
server's answers reach a client that has not taken the address yet.
"""

from __future__ import annotations

import argparse
import json
import random

from scapy.all import BOOTP, DHCP, IP, UDP, Ether, conf, srp1

conf.checkIPaddr = False  # answers come from the server to the broadcast address
conf.verb = 0


def option(packet, name):
    for opt in packet[DHCP].options:
        if isinstance(opt, tuple) and opt[0] == name:
            return opt[1]
    return None


def exchange(iface: str, mac: str, kind: str, xid: int, extra=(), timeout: float = 3.0):
    chaddr = bytes.fromhex(mac.replace(":", "")) + bytes(10)
    packet = (
        Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
        / IP(src="0.0.0.0", dst="255.255.255.255")
        / UDP(sport=68, dport=67)
        / BOOTP(chaddr=chaddr, xid=xid, flags=0x8000)
        / DHCP(options=[("message-type", kind), *extra, "end"])
    )
    for _ in range(3):
        answer = srp1(packet, iface=iface, timeout=timeout)
        if answer is not None and DHCP in answer:
            return answer
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iface", required=True)
    parser.add_argument("--mac", required=True)
    args = parser.parse_args()
    xid = random.getrandbits(32)
    result = {"offer": None, "ack": None, "server": None}
    offer = exchange(args.iface, args.mac, "discover", xid)
    if offer is not None and option(offer, "message-type") == 2:
        result["offer"] = offer[BOOTP].yiaddr
        server = option(offer, "server_id")
        result["server"] = server
        ack = exchange(args.iface, args.mac, "request", xid,
                       [("requested_addr", offer[BOOTP].yiaddr), ("server_id", server)])
        if ack is not None and option(ack, "message-type") == 5:
            result["ack"] = ack[BOOTP].yiaddr
    print(json.dumps(result))


if __name__ == "__main__":
    main()
