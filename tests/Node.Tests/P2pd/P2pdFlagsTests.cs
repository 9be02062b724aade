using Potluck.Node.Cli;
using Potluck.Node.Interop;
using Potluck.Node.P2pd;
using Potluck.Protocol.Multiformats;

namespace Potluck.Node.Tests.P2pd;

/// <summary>go-libp2p-daemon's command line as js-libp2p's interop runner writes it, and everything we refuse.</summary>
public class P2pdFlagsTests
{
    [Test]
    public void Parse_TheInteropRunnersLine_GivesTheDaemonItAsksFor()
    {
        var (settings, error) = P2pdFlags.Parse(["-listen=/ip4/127.0.0.1/tcp/0", "-hostAddrs=/ip4/127.0.0.1/tcp/0", "-noise=true",
            "-dhtServer", "-pubsub", "-pubsubRouter=floodsub", "-id=/dev/null", "-muxer=yamux"]);
        Assert.That(error, Is.Null);
        Assert.That(settings!.Control, Is.EqualTo(Multiaddr.Parse("/ip4/127.0.0.1/tcp/0")));
        Assert.That(settings.HostAddrs, Is.EqualTo(new[] { Multiaddr.Parse("/ip4/127.0.0.1/tcp/0") }));
        Assert.That((settings.Dht, settings.Pubsub, settings.Router, settings.IdentityFile, settings.Echo),
            Is.EqualTo((true, true, PubsubRouter.Floodsub, "/dev/null", true)));
    }

    [Test]
    public void Parse_GoFlagSyntax_DoubleDashSeparateValueAndBooleanSpellings()
    {
        var (settings, error) = P2pdFlags.Parse(["--listen", "/ip4/127.0.0.1/tcp/5000", "-noListenAddrs=T", "-pubsub=1", "-echo=FALSE",
            "-gossipsubHeartbeatInterval=1.5s", "-connGrace", "2m30s"]);
        Assert.That(error, Is.Null);
        Assert.That(settings!.Control.ToString(), Is.EqualTo("/ip4/127.0.0.1/tcp/5000"));
        Assert.That(settings.HostAddrs, Is.Empty);
        Assert.That((settings.Pubsub, settings.Echo), Is.EqualTo((true, false)));
        Assert.That(settings.GossipsubHeartbeatInterval, Is.EqualTo(TimeSpan.FromMilliseconds(1500)));
    }

    [TestCase("-tls=true", "TLS 1.3 is not available yet")]
    [TestCase("-plaintext", "plaintext connections are not offered")]
    [TestCase("-muxer=mplex", "mplex is not available")]
    [TestCase("-noise=false", "cannot be turned off")]
    [TestCase("-relayActive", "circuit relay v1's active mode does not exist in v2")]
    [TestCase("-b", "bootstrapping to public peers is not available")]
    [TestCase("-pubsubSign=false", "always signs")]
    [TestCase("-pubsubRouter=randomsub", "the routers are gossipsub and floodsub")]
    [TestCase("-listen=/unix/tmp/p2pd.sock", "not a multiaddr")]
    [TestCase("-listen=/ip4/127.0.0.1/udp/5000", "must be TCP")]
    [TestCase("-hostAddrs=/ip4/127.0.0.1/udp/0/quic-v1", "not a TCP address")]
    [TestCase("-lisen=/ip4/127.0.0.1/tcp/0", "unknown flag -lisen. Did you mean '-listen'?")]
    [TestCase("-connLo=many", "not a whole number")]
    [TestCase("-connGrace=soon", "not a duration")]
    [TestCase("-dht=maybe", "not a boolean")]
    [TestCase("stray", "unexpected argument 'stray'")]
    [TestCase("-listen", "-listen needs a value")]
    [TestCase("-id=/no/such/key", "no such file")]
    public void Parse_WhatPotluckCannotServe_IsRefusedWithWhy(string flag, string why)
    {
        var (settings, error) = P2pdFlags.Parse([flag]);
        Assert.That(settings, Is.Null);
        Assert.That(error, Does.Contain(why));
    }

    [Test]
    public void Parse_FeaturesWeLackAtTheirOffValue_AreAccepted()
    {
        var (settings, error) = P2pdFlags.Parse(["-tls=false", "-plaintext=false", "-relay=false", "-b=false", "-natPortMap=0", "-announceAddrs="]);
        Assert.That(error, Is.Null);
        Assert.That(settings, Is.Not.Null);
    }

    [TestCase("0", 0)]
    [TestCase("300ms", 300)]
    [TestCase("1h2m3s", 3_723_000)]
    [TestCase("1.5s", 1500)]
    [TestCase("-2s", -2000)]
    [TestCase("250us", 0.25)]
    public void ParseDuration_GoSpellings(string text, double milliseconds) =>
        Assert.That(P2pdFlags.ParseDuration(text)!.Value.TotalMilliseconds, Is.EqualTo(milliseconds).Within(1e-6));

    [TestCase("")]
    [TestCase("5")]
    [TestCase("5 s")]
    [TestCase("1d")]
    [TestCase("99999h")]
    [TestCase("s")]
    public void ParseDuration_NotADuration_IsNull(string text) => Assert.That(P2pdFlags.ParseDuration(text), Is.Null);

    [Test]
    public async Task Command_RefusedFlag_ExitsTwoWithTheReasonAndNoTrace()
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = await Commands.RunAsync(["p2pd", "-listen=/ip4/127.0.0.1/tcp/0", "-muxer=mplex"], stdout, stderr);
        Assert.That(code, Is.EqualTo(2));
        Assert.That(stderr.ToString(), Does.Contain("mplex is not available").And.Contain("potluck p2pd --help").And.Not.Contain("   at "));
        Assert.That(stdout.ToString(), Does.Not.Contain("Control socket"));
    }

    [Test]
    public async Task Command_Help_ListsTheGoFlags()
    {
        var stdout = new StringWriter();
        var code = await Commands.RunAsync(["p2pd", "--help"], stdout, new StringWriter());
        Assert.That(code, Is.EqualTo(0));
        Assert.That(stdout.ToString(), Does.Contain("-hostAddrs").And.Contain("-pubsubRouter").And.Contain("-dhtServer"));
    }

    // ---------------------------------------------------------------- CIDs

    [Test]
    public void TryMultihashOfCid_V0AndV1_NameTheSameMultihash()
    {
        var multihash = Convert.FromHexString("1220" + new string('a', 64));
        Assert.That(P2pdDaemon.TryMultihashOfCid(multihash, out var v0), Is.True);
        Assert.That(v0, Is.EqualTo(multihash));
        Assert.That(P2pdDaemon.TryMultihashOfCid([0x01, 0x55, .. multihash], out var v1), Is.True, "CIDv1, raw codec");
        Assert.That(v1, Is.EqualTo(multihash));
    }

    [TestCase("")]
    [TestCase("12")]
    [TestCase("0255" + "1220")]
    [TestCase("0155" + "1220aaaa")]
    [TestCase("0155" + "ffffffffffffffffffff")]
    public void TryMultihashOfCid_Malformed_IsRefused(string hex) =>
        Assert.That(P2pdDaemon.TryMultihashOfCid(Convert.FromHexString(hex), out _), Is.False);

    // ---------------------------------------------------------------- transport-interop settings and Redis

    private static Func<string, string?> Env(params (string Name, string Value)[] vars) =>
        name => vars.FirstOrDefault(v => v.Name == name).Value;

    private static readonly (string, string)[] Dialer =
        [("IS_DIALER", "true"), ("REDIS_ADDR", "127.0.0.1:6379"), ("TEST_KEY", "k1"), ("TRANSPORT", "tcp"), ("SECURE_CHANNEL", "noise"), ("MUXER", "yamux")];

    [Test]
    public void TransportInteropSettings_TheSuitesEnvironment_IsRead()
    {
        var s = TransportInteropCommand.Settings.Read(Env([.. Dialer, ("TEST_TIMEOUT_SECS", "30")]));
        Assert.That((s.IsDialer, s.RedisAddress, s.RedisKey, s.Timeout), Is.EqualTo((true, "127.0.0.1:6379", "k1_listener_multiaddr", TimeSpan.FromSeconds(30))));
    }

    [TestCase("TRANSPORT", "quic-v1", "Potluck's transport is tcp")]
    [TestCase("SECURE_CHANNEL", "tls", "tls is not available yet")]
    [TestCase("MUXER", "mplex", "mplex is not available")]
    [TestCase("IS_DIALER", "yes", "true or false")]
    [TestCase("TEST_TIMEOUT_SECS", "-5", "a whole number of seconds")]
    [TestCase("TEST_KEY", "", "TEST_KEY is not set")]
    public void TransportInteropSettings_WhatWeCannotDo_IsAUsageError(string name, string value, string why)
    {
        var vars = Dialer.Where(v => v.Item1 != name).Append((name, value)).ToArray();
        var e = Assert.Throws<UsageException>(() => TransportInteropCommand.Settings.Read(Env(vars)));
        Assert.That(e!.Message, Does.Contain(why));
    }

    private static Task<object?> Reply(string wire) =>
        RespClient.ReadReplyAsync(new MemoryStream(System.Text.Encoding.UTF8.GetBytes(wire)), CancellationToken.None);

    [Test]
    public async Task Resp_Replies_AreDecoded()
    {
        Assert.That(await Reply("+OK\r\n"), Is.EqualTo("OK"));
        Assert.That(await Reply(":3\r\n"), Is.EqualTo(3L));
        Assert.That(await Reply("$-1\r\n"), Is.Null);
        Assert.That(await Reply("*-1\r\n"), Is.Null);
        Assert.That(await Reply("*2\r\n$3\r\nkey\r\n$14\r\n/ip4/1.2.3.4/x\r\n"), Is.EqualTo(new object?[] { "key", "/ip4/1.2.3.4/x" }));
        var e = Assert.ThrowsAsync<RedisException>(() => Reply("-WRONGTYPE no\r\n"));
        Assert.That(e!.Message, Is.EqualTo("WRONGTYPE no"));
    }

    [TestCase("$999999999\r\n", TestName = "Resp_HugeBulkLength_IsRefusedBeforeAllocating")]
    [TestCase("*100000\r\n", TestName = "Resp_HugeArray_IsRefused")]
    [TestCase("$3\r\nabcXY", TestName = "Resp_BulkWithoutCrLf_IsRefused")]
    [TestCase("?what\r\n", TestName = "Resp_UnknownType_IsRefused")]
    [TestCase(":twelve\r\n", TestName = "Resp_BadInteger_IsRefused")]
    [TestCase("*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", TestName = "Resp_DeepNesting_IsRefused")]
    public void Resp_Malformed_IsInvalidData(string wire) =>
        Assert.ThrowsAsync<InvalidDataException>(() => Reply(wire));

    [Test]
    public void Resp_Truncated_IsEndOfStream() =>
        Assert.ThrowsAsync<EndOfStreamException>(() => Reply("+OK"));
}
