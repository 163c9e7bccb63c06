"""
Tests for L{txraft.tls} and TLS end to end: certificate files, the node's
and the client's options, and real C{twistd -n txraft} nodes speaking TLS to
clients and to each other, with certificates the tests make.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import temporaryDirectory
from tests.test_process import PATIENCE, ProcessTestCase, showingNodeOutput
from txraft import client, tap
from txraft.messages import RequestVote, formatMessage
from txraft.testing.certificates import Issued, makeAuthority, makeCertificate
from txraft.testing.localcluster import LocalCluster
from txraft.tls import TLSFileError, loadTLS

CONFIG = "s1 127.0.0.1 10000\ns2 127.0.0.1 10001\ns3 127.0.0.1 10002\n"


class LoadTests(SynchronousTestCase):
    """
    Tests for L{loadTLS} and the TLS options of the node and the client:
    unusable files stop a node with one line naming them.
    """

    def setUp(self) -> None:
        """A CA and a node certificate it signed."""
        self.directory = temporaryDirectory(self)
        self.ca = makeAuthority(self.directory)
        self.node = makeCertificate(self.directory, "s1", self.ca)

    def test_load(self) -> None:
        """A certificate, its key and a CA load."""
        config = loadTLS(self.node.certPath, self.node.keyPath, self.ca.certPath)
        self.assertIsNotNone(config.authority)
        self.assertIsNotNone(config.serverOptions())
        self.assertIsNotNone(config.clientOptions("127.0.0.1"))

    def test_unusableFiles(self) -> None:
        """Missing, non-PEM and mismatched files are refused, naming the file."""
        missing = os.path.join(self.directory, "missing.crt")
        for arguments, fragment in [
            ((missing, self.node.keyPath), f"--tls-cert {missing}: cannot read it"),
            ((self.node.keyPath, self.node.keyPath), "not a PEM certificate"),
            ((self.node.certPath, self.node.certPath), "not a PEM private key"),
            ((self.node.certPath, self.ca.keyPath), "does not match"),
            ((self.node.certPath, self.node.keyPath, self.node.keyPath), "--tls-ca"),
        ]:
            error = self.assertRaises(TLSFileError, loadTLS, *arguments)
            self.assertIn(fragment, str(error))

    def nodeOptions(self, *arguments: str) -> tap.Options:
        """Parse node s1's options with C{arguments}."""
        config = os.path.join(self.directory, "cluster.conf")
        with open(config, "w") as f:
            f.write(CONFIG)
        options = tap.Options()
        options.parseOptions(
            ["--config", config, "--data-dir", self.directory, "--name", "s1", *arguments]
        )
        return options

    def test_nodeOptions(self) -> None:
        """
        --tls-cert and --tls-key go together, --tls-ca needs them, and a
        bad file stops the node with one line.
        """
        options = self.nodeOptions(
            "--tls-cert", self.node.certPath, "--tls-key", self.node.keyPath
        )
        self.assertIsNotNone(options.tls)
        self.assertIsNone(self.nodeOptions().tls)
        self.assertRaises(usage.UsageError, self.nodeOptions, "--tls-cert", self.node.certPath)
        self.assertRaises(usage.UsageError, self.nodeOptions, "--tls-ca", self.ca.certPath)
        error = self.assertRaises(
            SystemExit,
            self.nodeOptions,
            "--tls-cert",
            self.node.certPath,
            "--tls-key",
            self.ca.keyPath,
        )
        self.assertIn("does not match", str(error.code))

    def test_clientOptions(self) -> None:
        """C{txraft-client --tls [--tls-ca FILE]} makes a verifying TLS context."""
        options = client.Options()
        options.parseOptions(["--tls", "--tls-ca", self.ca.certPath, "10000", "status"])
        self.assertEqual(options.tls.verify_mode, ssl.CERT_REQUIRED)
        self.assertTrue(options.tls.check_hostname)
        self.assertRaises(
            usage.UsageError,
            client.Options().parseOptions,
            ["--tls-ca", self.ca.certPath, "10000"],
        )
        self.assertRaises(
            usage.UsageError,
            client.Options().parseOptions,
            ["--tls", "--tls-ca", self.node.keyPath, "10000"],
        )


def tlsArguments(issued: Issued, ca: Issued) -> list[str]:
    """The node options that make it speak TLS with C{issued}, trusting C{ca}."""
    return ["--tls-cert", issued.certPath, "--tls-key", issued.keyPath, "--tls-ca", ca.certPath]


class TLSClusterTests(ProcessTestCase):
    """A keyed cluster of real nodes whose port and peer links speak TLS."""

    def tlsCluster(self, http: bool = False) -> tuple[LocalCluster, Issued]:
        """A keyed three-node cluster with TLS (not started), and its CA."""
        cluster = self.makeCluster(http=http)
        ca = makeAuthority(cluster.directory)
        node = makeCertificate(cluster.directory, "node", ca)
        cluster.extraArgs += tlsArguments(node, ca)
        cluster.tls = ssl.create_default_context(cafile=ca.certPath)
        return cluster, ca

    @showingNodeOutput
    def test_clientsAndPeersOverTLS(self) -> None:
        """
        The nodes elect a leader and commit over TLS; the bundled client
        with C{--tls --tls-ca} reads what was written; a plain TCP client
        gets no answer; a client that does not trust the CA refuses the
        node; and a peer line from a TLS connection with no certificate
        gets C{ERROR}.
        """
        cluster, ca = self.tlsCluster()
        cluster.startAll()
        leader = cluster.waitForLeader(PATIENCE)
        ours = cluster.client()
        self.addCleanup(ours.close)
        self.assertEqual(ours.request("set secret value"), "OK")

        host, port = cluster.address(leader)
        result = subprocess.run(
            [sys.executable, "-m", "txraft.client", "--tls", "--tls-ca", ca.certPath]
            + [str(port), "get", "secret"],
            env=cluster.env,
            capture_output=True,
            text=True,
            timeout=PATIENCE,
        )
        self.assertEqual((result.stdout, result.returncode), ("OK value\n", 0), result.stderr)

        with client.LineConnection(host, port, PATIENCE) as plain:
            plain.send(b"get secret\n")
            self.assertRaises(OSError, plain.readLine)

        self.assertRaises(
            ssl.SSLError, client.LineConnection, host, port, PATIENCE, ssl.create_default_context()
        )

        with cluster.connect(leader, PATIENCE) as anonymous:
            answer = anonymous.request(formatMessage("s9", RequestVote(99, 0, 0)))
            self.assertTrue(answer.startswith("ERROR"), answer)
            peerName = next(name for name in cluster.names if name != leader)
            answer = anonymous.request(formatMessage(peerName, RequestVote(99, 0, 0)))
            self.assertIn("need a certificate", answer)
        with cluster.connect(leader, PATIENCE) as anonymous:
            answer = anonymous.request(f"{peerName}@AUTH1 " + "00" * 32)
            self.assertIn("need a certificate", answer)
        self.assertLess(cluster.status(leader, PATIENCE)["term"], 99)

    @showingNodeOutput
    def test_statusAllAndWebViewOverTLS(self) -> None:
        """
        On a keyed TLS cluster, C{txraft-client --tls status --all} (with
        no key: C{status} needs none) and a node's web view, whose survey
        asks the other members as its peer links do, both reach every
        member and find it healthy.
        """
        cluster, ca = self.tlsCluster(http=True)
        cluster.startAll()
        leader = cluster.waitForLeader(PATIENCE)
        _, port = cluster.address(cluster.followers(leader)[0])
        command = [sys.executable, "-m", "txraft.client", "--tls", "--tls-ca", ca.certPath]
        deadline = time.monotonic() + PATIENCE
        while True:
            result = subprocess.run(
                [*command, str(port), "status", "--all"],
                env=cluster.env,
                capture_output=True,
                text=True,
                timeout=PATIENCE,
            )
            if result.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        rows = [line.split() for line in result.stdout.splitlines()[1:]]
        self.assertEqual(
            [(row[0], row[-1]) for row in rows], [(n, "healthy") for n in cluster.names]
        )

        url = cluster.httpURL(cluster.followers(leader)[0], "/cluster")
        with urllib.request.urlopen(url, timeout=PATIENCE) as response:
            picture = json.load(response)
        self.assertEqual(picture["leader"], leader)
        self.assertEqual(
            [(row["name"], row["reachable"]) for row in picture["members"]],
            [(name, True) for name in cluster.names],
        )

    @showingNodeOutput
    def test_peerWithAnotherCAGetsNothing(self) -> None:
        """
        A node whose certificate another CA signed (holding the right key)
        cannot link to the others, nor they to it: it gets no entry and
        learns no leader, and the other two commit without it.
        """
        cluster, ca = self.tlsCluster()
        other = makeAuthority(cluster.directory, "other CA")
        outsider = makeCertificate(cluster.directory, "outsider", other)
        cluster.start("s1")
        cluster.start("s2")
        cluster.start("s3", tlsArguments(outsider, other))
        ours = cluster.client()
        self.addCleanup(ours.close)
        self.assertEqual(ours.request("set k v", deadline=time.monotonic() + PATIENCE), "OK")
        outsiderTLS = ssl.create_default_context(cafile=other.certPath)
        with client.LineConnection(*cluster.address("s3"), PATIENCE, outsiderTLS) as connection:
            status = connection.request("status")
        self.assertIn('"lastIndex":0', status.replace(" ", ""))
        self.assertIn('"leader":null', status.replace(" ", ""))
