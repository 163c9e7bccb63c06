"""
Tests for L{txraft.config}.
"""

import os
import shutil
import tempfile

from twisted.trial.unittest import TestCase

from txraft.config import ClusterConfig, ConfigError, NodeAddress, loadConfig, parseConfig

THREE_NODES = """\
# name host port
s1 127.0.0.1 10000
s2 127.0.0.1 10001
s3 127.0.0.1 10002
"""


class ParseConfigTests(TestCase):
    """
    Tests for L{parseConfig} on valid input.
    """

    def test_threeNodesInFileOrder(self) -> None:
        """
        Each C{NAME HOST PORT} line becomes a L{NodeAddress}, in file order.
        """
        config = parseConfig(THREE_NODES)
        self.assertEqual(
            config.nodes,
            (
                NodeAddress("s1", "127.0.0.1", 10000),
                NodeAddress("s2", "127.0.0.1", 10001),
                NodeAddress("s3", "127.0.0.1", 10002),
            ),
        )

    def test_commentsAndBlankLines(self) -> None:
        """
        Whole-line comments, trailing comments, blank and whitespace-only
        lines are ignored, and fields may be separated by any whitespace.
        """
        config = parseConfig(
            "\n# header\n   \n  a\tlocalhost   1  # first\n#b x 2\nc-_9 h 65535#\n"
        )
        self.assertEqual(
            config.nodes,
            (NodeAddress("a", "localhost", 1), NodeAddress("c-_9", "h", 65535)),
        )

    def test_sameHostDifferentPorts(self) -> None:
        """
        Nodes may share a host as long as their ports differ, and share a
        port as long as their hosts differ.
        """
        config = parseConfig("a h1 1\nb h1 2\nc h2 1\n")
        self.assertEqual(config.names(), ("a", "b", "c"))

    def test_shippedConfig(self) -> None:
        """
        The example C{etc/cluster.conf} shipped with the project is valid and
        describes the three-node localhost cluster.
        """
        path = os.path.join(os.path.dirname(__file__), os.pardir, "etc", "cluster.conf")
        config = loadConfig(path)
        self.assertEqual(config.names(), ("s1", "s2", "s3"))
        self.assertEqual([n.port for n in config.nodes], [10000, 10001, 10002])


class ParseConfigErrorTests(TestCase):
    """
    Tests for L{parseConfig} rejecting invalid input with a one-line
    L{ConfigError} naming the source and line.
    """

    def assertConfigError(self, text: str, expected: str) -> None:
        """
        Assert that parsing C{text} from source C{f.conf} raises
        L{ConfigError} whose message is exactly C{expected}.
        """
        error = self.assertRaises(ConfigError, parseConfig, text, "f.conf")
        self.assertEqual(str(error), expected)
        self.assertNotIn("\n", str(error))

    def test_tooFewFields(self) -> None:
        """
        A line with fewer than three fields is rejected.
        """
        self.assertConfigError(
            "s1 127.0.0.1 1\ns2 127.0.0.1\n",
            "f.conf:2: expected 3 fields 'NAME HOST PORT', got 2: 's2 127.0.0.1'",
        )

    def test_tooManyFields(self) -> None:
        """
        A line with more than three fields is rejected.
        """
        self.assertConfigError(
            "s1 127.0.0.1 1 extra\n",
            "f.conf:1: expected 3 fields 'NAME HOST PORT', got 4: 's1 127.0.0.1 1 extra'",
        )

    def test_badName(self) -> None:
        """
        A node name with characters outside C{[A-Za-z0-9_-]} is rejected.
        """
        self.assertConfigError(
            "s1 h 1\ns.2 h 2\n",
            "f.conf:2: node name 's.2' must match [A-Za-z0-9_-]+",
        )

    def test_portNotInteger(self) -> None:
        """
        A port that is not a decimal integer is rejected.
        """
        self.assertConfigError(
            "# header\n\ns1 h abc\n",
            "f.conf:3: port 'abc' is not an integer in 1..65535",
        )

    def test_portSigned(self) -> None:
        """
        A port written with a sign is rejected, even if C{int()} would take it.
        """
        self.assertConfigError("s1 h +80\n", "f.conf:1: port '+80' is not an integer in 1..65535")

    def test_portZero(self) -> None:
        """
        Port 0 (an ephemeral port) is rejected: peers could not find the node.
        """
        self.assertConfigError("s1 h 0\n", "f.conf:1: port '0' is not an integer in 1..65535")

    def test_portTooLarge(self) -> None:
        """
        A port above 65535 is rejected.
        """
        self.assertConfigError(
            "s1 h 65536\n", "f.conf:1: port '65536' is not an integer in 1..65535"
        )

    def test_duplicateName(self) -> None:
        """
        Two nodes with the same name are rejected, citing the first one.
        """
        self.assertConfigError(
            "s1 h 1\ns2 h 2\ns1 h 3\n",
            "f.conf:3: duplicate node name 's1' (first on line 1)",
        )

    def test_duplicateAddress(self) -> None:
        """
        Two nodes with the same host and port are rejected, citing the first.
        """
        self.assertConfigError(
            "s1 h 1\ns2 h 1\n",
            "f.conf:2: duplicate address h:1 (first on line 1)",
        )

    def test_empty(self) -> None:
        """
        A config with no nodes at all is rejected.
        """
        self.assertConfigError("", "f.conf: no nodes configured (expected lines 'NAME HOST PORT')")

    def test_onlyComments(self) -> None:
        """
        A config of only comments and blank lines has no nodes and is rejected.
        """
        self.assertConfigError(
            "# nothing here\n\n   # still nothing\n",
            "f.conf: no nodes configured (expected lines 'NAME HOST PORT')",
        )

    def test_defaultSource(self) -> None:
        """
        Without a source, errors name C{<config>}.
        """
        error = self.assertRaises(ConfigError, parseConfig, "s1 h x\n")
        self.assertEqual(str(error), "<config>:1: port 'x' is not an integer in 1..65535")


class ClusterConfigTests(TestCase):
    """
    Tests for the lookups on L{ClusterConfig}.
    """

    def setUp(self) -> None:
        """
        Parse the three-node example as if from C{etc/cluster.conf}.
        """
        self.config = parseConfig(THREE_NODES, "etc/cluster.conf")

    def test_node(self) -> None:
        """
        L{ClusterConfig.node} returns the address of the named node.
        """
        self.assertEqual(self.config.node("s2"), NodeAddress("s2", "127.0.0.1", 10001))

    def test_unknownNode(self) -> None:
        """
        L{ClusterConfig.node} raises L{ConfigError} naming the unknown node and
        the config source.
        """
        error = self.assertRaises(ConfigError, self.config.node, "s9")
        self.assertEqual(str(error), "unknown node name 's9': not in etc/cluster.conf")

    def test_names(self) -> None:
        """
        L{ClusterConfig.names} lists node names in file order.
        """
        self.assertEqual(self.config.names(), ("s1", "s2", "s3"))

    def test_peersOf(self) -> None:
        """
        L{ClusterConfig.peersOf} returns every other node, in file order.
        """
        self.assertEqual(
            self.config.peersOf("s2"),
            (NodeAddress("s1", "127.0.0.1", 10000), NodeAddress("s3", "127.0.0.1", 10002)),
        )

    def test_peersOfUnknown(self) -> None:
        """
        L{ClusterConfig.peersOf} rejects a name that is not in the cluster
        rather than returning every node.
        """
        self.assertRaises(ConfigError, self.config.peersOf, "s9")

    def test_frozen(self) -> None:
        """
        Configs and addresses are immutable, so they can be shared freely.
        """
        self.assertIsInstance(self.config, ClusterConfig)
        self.assertRaises(AttributeError, setattr, self.config, "nodes", ())
        self.assertRaises(AttributeError, setattr, self.config.nodes[0], "port", 1)


class LoadConfigTests(TestCase):
    """
    Tests for L{loadConfig}.
    """

    def configPath(self) -> str:
        """
        Return a fresh path in a private temporary directory removed after the
        test (trial's C{mktemp} is relative to the working directory, which
        under pytest is the source tree).
        """
        directory = tempfile.mkdtemp(prefix="txraft-test-")
        self.addCleanup(shutil.rmtree, directory)
        return os.path.join(directory, "cluster.conf")

    def test_load(self) -> None:
        """
        L{loadConfig} parses the file and names it in later errors.
        """
        path = self.configPath()
        with open(path, "w") as f:
            f.write(THREE_NODES)
        config = loadConfig(path)
        self.assertEqual(config.names(), ("s1", "s2", "s3"))
        self.assertEqual(config.source, path)

    def test_invalidFileNamesPath(self) -> None:
        """
        Errors in a loaded file cite the file's path and line.
        """
        path = self.configPath()
        with open(path, "w") as f:
            f.write("s1 h 1\ns2 h\n")
        error = self.assertRaises(ConfigError, loadConfig, path)
        self.assertTrue(str(error).startswith(f"{path}:2: expected 3 fields"))

    def test_missingFile(self) -> None:
        """
        A missing file raises L{ConfigError}, not L{OSError}, naming the path.
        """
        path = self.configPath()
        error = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(
            str(error), f"{path}: cannot read cluster config: No such file or directory"
        )

    def test_directory(self) -> None:
        """
        A path that is a directory raises L{ConfigError}.
        """
        path = self.configPath()
        os.mkdir(path)
        error = self.assertRaises(ConfigError, loadConfig, path)
        self.assertTrue(str(error).startswith(f"{path}: cannot read cluster config: "))

    def test_notUtf8(self) -> None:
        """
        A file that is not UTF-8 text raises L{ConfigError}.
        """
        path = self.configPath()
        with open(path, "wb") as f:
            f.write(b"s1 h \xff\n")
        error = self.assertRaises(ConfigError, loadConfig, path)
        self.assertTrue(str(error).startswith(f"{path}: cannot read cluster config: "))
        self.assertNotIn("\n", str(error))
