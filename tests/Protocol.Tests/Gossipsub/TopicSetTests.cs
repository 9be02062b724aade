using Potluck.Protocol.Gossipsub;

namespace Potluck.Protocol.Tests.Gossipsub;

/// <summary>
/// A peer's topics (<see cref="TopicSet"/>) against the <see cref="HashSet{T}"/> they replace: the same answers and the
/// same enumeration order after every add and remove (the router walks a leaving peer's topics in that order).
/// </summary>
public class TopicSetTests
{
    [TestCase(1)]
    [TestCase(2)]
    [TestCase(3)]
    public void RandomAddsAndRemoves_MatchAHashSetInAnswersAndOrder(int seed)
    {
        var random = new Random(seed);
        var names = Enumerable.Range(0, 24).Select(i => $"topic-{i}").ToArray();
        var expected = new HashSet<string>(StringComparer.Ordinal);
        var set = new TopicSet();
        for (var step = 0; step < 5_000; step++)
        {
            // A fresh string each time: the set compares by value, not by reference.
            var topic = new string(names[random.Next(names.Length)].AsSpan());
            var add = random.NextDouble() < 0.55;
            var (want, got) = add ? (expected.Add(topic), set.Add(topic)) : (expected.Remove(topic), set.Remove(topic));
            Assert.That(got, Is.EqualTo(want), $"seed {seed}, step {step}: {(add ? "add" : "remove")} {topic}");
            Assert.That(set.Count, Is.EqualTo(expected.Count), $"seed {seed}, step {step}");
            Assert.That(Enumerate(set), Is.EqualTo(expected.ToList()), $"seed {seed}, step {step}: order");
            Assert.That(set.Contains(topic), Is.EqualTo(expected.Contains(topic)));
        }
    }

    [Test]
    public void FreedSlots_AreReusedLastFreedFirst_AsAHashSetDoes()
    {
        var set = new TopicSet();
        foreach (var t in new[] { "a", "b", "c", "d", "e" })
        {
            set.Add(t);
        }
        set.Remove("b");
        set.Remove("d");
        set.Add("x"); // takes d's slot
        set.Add("y"); // takes b's slot
        set.Add("z"); // a new slot at the end
        var hash = new HashSet<string>(StringComparer.Ordinal) { "a", "b", "c", "d", "e" };
        hash.Remove("b");
        hash.Remove("d");
        hash.Add("x");
        hash.Add("y");
        hash.Add("z");
        Assert.That(Enumerate(set), Is.EqualTo(new[] { "a", "y", "c", "x", "e", "z" }));
        Assert.That(Enumerate(set), Is.EqualTo(hash.ToList()));
    }

    [Test]
    public void Empty_EnumeratesNothing()
    {
        var set = new TopicSet();
        Assert.Multiple(() =>
        {
            Assert.That(set.Count, Is.Zero);
            Assert.That(set.Contains("a"), Is.False);
            Assert.That(set.Remove("a"), Is.False);
            Assert.That(Enumerate(set), Is.Empty);
        });
    }

    private static List<string> Enumerate(TopicSet set)
    {
        var list = new List<string>();
        foreach (var t in set)
        {
            list.Add(t);
        }
        return list;
    }
}
