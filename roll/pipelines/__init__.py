"""roll.pipelines package."""
